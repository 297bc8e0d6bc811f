"""Handwritten-digit classification with the Hugging Face ecosystem."""

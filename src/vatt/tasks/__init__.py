"""Downstream protocols on a pretrained VATT (plain PyTorch): features, linear probes, zero-shot classification and
retrieval.

The entry point is ``python -m vatt.eval`` (``make eval``); fine-tuning is a
LightningModule (``vatt.lightning.finetune``) trained by ``vatt.train``. ``demo_probe``
scores the demo labels during pretraining (``vatt.lightning.callbacks.DemoProbe``).
"""

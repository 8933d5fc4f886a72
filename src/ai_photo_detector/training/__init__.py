"""Training: backbone factory, augmentations, train loop, calibration, export, pipeline.

Needs the ``train`` extra (torch, timm, MLflow); serving never imports this package.
"""

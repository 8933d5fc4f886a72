"""Model registry (MLflow): register, promote, roll back, resolve models:/ references."""

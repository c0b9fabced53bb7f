"""Launchers: Cloud TPU pods (tpu_pod.py, around gcloud) and SLURM GPU clusters (slurm.sbatch)."""

"""The dashboard: a static page served at / that reads the same /api/v1 routes as everyone else."""

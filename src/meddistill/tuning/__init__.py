"""Hyperparameter search on the validation split (`meddistill tune`): the search space, and
the names of the files a tune folder holds (read by app/tune.py and the report)."""

STUDY_FILE = "study.db"  # Optuna's SQLite storage: a killed search resumes from it
TRIALS_FILE = "trials.json"  # every trial's values, state and val score
PRESET_FILE = "preset.yaml"  # the winner, as a distill config

"""Methods the runner can run on a setting: siloed, centralized and federated (vertical / horizontal)."""

"""Who spent: attribution (team, project, user, tags), budgets and virtual keys."""

"""Fleet configuration changes: change sets, object states, plans (pure)."""

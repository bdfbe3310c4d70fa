"""Service state behind one interface: tasks, call budgets, pending approvals."""

"""What the report stage writes besides its tables: the papers' claims measured on this run, contact sheets and
traversal grids."""

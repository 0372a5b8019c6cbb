"""The `casebook` command (casebook.cli): the entry point, above cases/ and shared/."""

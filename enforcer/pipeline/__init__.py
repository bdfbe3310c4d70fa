"""The one pipeline every call passes through: validate, resolve task,
decide (Rego), log, and for Execute run the sandbox and log again."""

// PLACEHOLDER (helper replaces)

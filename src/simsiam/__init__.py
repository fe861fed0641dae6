"""SimSiam."""

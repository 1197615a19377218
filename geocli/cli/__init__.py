"""The command-line layer: parse, validate, call one library function, render the result."""

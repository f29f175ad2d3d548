"""One module per ``steerkit`` command; each wires options to one steerkit function and renders its result."""

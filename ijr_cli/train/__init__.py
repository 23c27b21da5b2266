"""Training: `state` (what a checkpoint stores), `step` (one optimizer step, plain / SAM / EJR), `ejr` (the
pieces of paper 000's explicit Jacobian regularisation), `loop` (the fit loop)."""

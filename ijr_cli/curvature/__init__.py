"""Curvature and Jacobians as plain functions on a model, a probe set and flat parameter vectors.

- `params`: flat views of a model's parameters (the vectors every operator takes).
- `probe`: the probe set's chunks under the probe's BatchNorm mode, with the model's state restored afterwards.
- `operators`: Hessian- and Gauss-Newton-vector products and the loss gradient over the probe set.
- `lanczos`: the top-k algebraic eigenpairs of such an operator, on its device.
- `jacobians`: the mean logit Jacobian <J> (paper 000) and input-output Jacobian norms (paper 002).
- `impurity`: lambda_(1) of diag(p) - p p^T (paper 000, Theorem 1) and the Gini impurity.
"""

"""The metric names of SCIENCE.md's table, defined once (no torch): `measure` computes them, the report reads them.

A metric group shares one computation (GROUPS); COMPANIONS are the by-products recorded with a metric.
"""

from __future__ import annotations

from typing import Dict

TRAIN_LOSS, TRAIN_ACC, TRAIN_CE = "train_loss", "train_acc", "train_ce"
TEST_LOSS, TEST_ACC, TEST_CE = "test_loss", "test_acc", "test_ce"
GEN_GAP_LOSS, GEN_GAP_ACC = "gen_gap_loss", "gen_gap_acc"
SHARPNESS, SHARPNESS_K, SHARPNESS_RESID, SHARPNESS_MATVECS = (
    "sharpness",
    "sharpness_k",
    "sharpness_resid",
    "sharpness_matvecs",
)
SHARPNESS_COUNT = "sharpness_count"  # sharpness_k=auto: how many eigenvalues are above track_fraction * threshold
GN_SHARPNESS, THRESHOLD, COS_GRAD_TOP_EIG = "gn_sharpness", "threshold", "cos_grad_top_eig"
IMPURITY_MEAN, IMPURITY_Q25, IMPURITY_Q50, IMPURITY_Q75 = (
    "impurity_mean",
    "impurity_q25",
    "impurity_q50",
    "impurity_q75",
)
GINI_MEAN, P1_MEAN = "gini_mean", "p1_mean"
JAC_OP_NORM, JAC_U_NORM_SQ, JAC_FRO_SQ, IJR_PROXY = "jac_op_norm", "jac_u_norm_sq", "jac_fro_sq", "ijr_proxy"
INPUT_JAC_MAX, INPUT_JAC_MEAN = "input_jac_max", "input_jac_mean"
TEST_INPUT_JAC_MAX, TEST_INPUT_JAC_MEAN = "test_input_jac_max", "test_input_jac_mean"
WEIGHT_NORM, DIST_INIT = "weight_norm", "dist_init"
LOGIT_NORM_MEAN, LOGIT_SUM_ABS_MEAN, GRAD_NORM = "logit_norm_mean", "logit_sum_abs_mean", "grad_norm"
# the edge of stochastic stability (Andreyev & Beneventano 2024): minibatch curvature, means over minibatches
BATCH_SHARPNESS, BATCH_SHARPNESS_SE = "batch_sharpness", "batch_sharpness_se"
BATCH_LAMBDA_MAX, BATCH_LAMBDA_MAX_SE = "batch_lambda_max", "batch_lambda_max_se"

# paper 000 App. D and Figs 8-14 (`measure.appendix_d`); the array-valued ones are stored in arrays.bin
Q_LAMBDA_SQRT = "q_lambda_sqrt"  # (C, C) <Q Lambda^{1/2}> in the probability-ranked basis (Fig. 8)
M_COS, M_CLASS_COUNT = "m_cos", "m_class_count"  # (C, C) cosines of the class means m_i; (C,) |D_i| (Fig. 9 right)
ALIGN_S_GRAD, ALIGN_S_TOP_EIG = "align_S_grad", "align_S_top_eig"  # A_S of grad L_S and of the top eigenvector
M_MRL = "m_mrl"  # (C,) mean resultant length of m / ||m|| per class (Figs 9 left, 29)
COS_M_GRAD_Q25, COS_M_GRAD_Q50, COS_M_GRAD_Q75 = "cos_m_grad_q25", "cos_m_grad_q50", "cos_m_grad_q75"
JQ1_NORM_HIST, JQ_COS2_HIST = "jq1_norm_hist", "jq_cos2_hist"  # Fig. 11 histograms (fixed bins)
TRAJECTORY = "trajectory"  # (trajectory_dim,) a seeded sketch of theta (Figs 4, 26; measure.trajectory)
WEIGHT_NORM_LAYERS = "weight_norm_layers"  # (layers,) ||theta_l|| per module with parameters (Fig. 14)
ARRAY_METRICS = (
    Q_LAMBDA_SQRT,
    M_COS,
    M_CLASS_COUNT,
    M_MRL,
    JQ1_NORM_HIST,
    JQ_COS2_HIST,
    WEIGHT_NORM_LAYERS,
    TRAJECTORY,
)

# list-valued scalars of a row (metrics.jsonl holds a list): each entry is its own column / tracked scalar,
# `list_column(name, i)` (sharpness_k_2: the second tracked eigenvalue), in the report and in the live loggers
LIST_METRICS = (SHARPNESS_K,)


def list_column(key: str, i: int) -> str:
    """The name of the i-th (1-based) entry of a list metric: sharpness_k_2 is the second tracked eigenvalue."""
    return f"{key}_{i}"


# bookkeeping recorded beside the metrics (each row's step and lr, a measurement's cost and conditions)
STEP, LR, BATCH_LOSS, ELAPSED_S = "step", "lr", "batch_loss", "elapsed_s"
SHARPNESS_PATH = "sharpness_path"  # which Hessian-vector product path ran (cached_double_backward, ...)
GN_SHARPNESS_RESID, GN_SHARPNESS_MATVECS = "gn_sharpness_resid", "gn_sharpness_matvecs"
BATCH_SHARPNESS_BATCHES = "batch_sharpness_batches"  # minibatches a batch_sharpness row averaged
BATCH_LAMBDA_MAX_MATVECS = "batch_lambda_max_matvecs"  # Hessian-vector products of a batch_lambda_max row
JACOBIAN_PASSES = "jacobian_passes"  # backward passes of the jacobian group
PER_EXAMPLE_N = "per_example_n"  # examples of the per_example group (the first metrics.n_per_example of S)
PROBE_N, PROBE_BN_MODE = "probe_n", "probe_bn_mode"  # the probe set a curvature row was measured on
MEASURE_SKIPPED = "measure_skipped"  # why a due measurement was not made (non-finite parameters)

EVAL_METRICS = (TRAIN_LOSS, TRAIN_ACC, TRAIN_CE, TEST_LOSS, TEST_ACC, TEST_CE, GEN_GAP_LOSS, GEN_GAP_ACC)

# group -> the metric names it produces (requestable names; bookkeeping keys such as sharpness_s come along)
GROUPS: Dict[str, tuple] = {
    "eval": EVAL_METRICS,
    "weights": (WEIGHT_NORM, DIST_INIT, WEIGHT_NORM_LAYERS),
    "threshold": (THRESHOLD,),
    "probe_outputs": (
        IMPURITY_MEAN,
        IMPURITY_Q25,
        IMPURITY_Q50,
        IMPURITY_Q75,
        GINI_MEAN,
        P1_MEAN,
        LOGIT_NORM_MEAN,
        LOGIT_SUM_ABS_MEAN,
    ),
    "grad": (GRAD_NORM,),
    "sharpness": (SHARPNESS, SHARPNESS_K, SHARPNESS_RESID, SHARPNESS_MATVECS, SHARPNESS_COUNT, COS_GRAD_TOP_EIG),
    "gn_sharpness": (GN_SHARPNESS,),
    "batch_sharpness": (BATCH_SHARPNESS, BATCH_SHARPNESS_SE),
    "batch_lambda_max": (BATCH_LAMBDA_MAX, BATCH_LAMBDA_MAX_SE),
    "jacobian": (JAC_OP_NORM, JAC_U_NORM_SQ, JAC_FRO_SQ, IJR_PROXY),
    "input_jacobian": (INPUT_JAC_MAX, INPUT_JAC_MEAN, TEST_INPUT_JAC_MAX, TEST_INPUT_JAC_MEAN),
    "logit_hessian": (Q_LAMBDA_SQRT,),
    "m_vectors": (M_COS, M_CLASS_COUNT, ALIGN_S_GRAD, ALIGN_S_TOP_EIG),
    "per_example": (M_MRL, COS_M_GRAD_Q25, COS_M_GRAD_Q50, COS_M_GRAD_Q75, JQ1_NORM_HIST, JQ_COS2_HIST),
    "trajectory": (TRAJECTORY,),
}
# by-products recorded whenever their metric is (SCIENCE.md: "Record sharpness_resid, sharpness_matvecs, ...")
COMPANIONS = {
    SHARPNESS: (SHARPNESS_K, SHARPNESS_RESID, SHARPNESS_MATVECS, SHARPNESS_COUNT),
    BATCH_SHARPNESS: (BATCH_SHARPNESS_SE,),
    BATCH_LAMBDA_MAX: (BATCH_LAMBDA_MAX_SE,),
    M_COS: (M_CLASS_COUNT,),
}
GROUP_OF = {name: group for group, names in GROUPS.items() for name in names}
MEASURABLE = tuple(name for group, names in GROUPS.items() if group != "eval" for name in names)
# each group's wall time in a row, "<group>_s" (spelled out: grep finds every key ijr writes)
SECONDS = {
    "eval": "eval_s",
    "weights": "weights_s",
    "threshold": "threshold_s",
    "probe_outputs": "probe_outputs_s",
    "grad": "grad_s",
    "sharpness": "sharpness_s",
    "gn_sharpness": "gn_sharpness_s",
    "batch_sharpness": "batch_sharpness_s",
    "batch_lambda_max": "batch_lambda_max_s",
    "jacobian": "jacobian_s",
    "input_jacobian": "input_jacobian_s",
    "logit_hessian": "logit_hessian_s",
    "m_vectors": "m_vectors_s",
    "per_example": "per_example_s",
    "trajectory": "trajectory_s",
}

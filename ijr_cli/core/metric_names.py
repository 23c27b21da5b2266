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

# bookkeeping recorded beside the metrics (each row's step and lr, a measurement's cost and conditions)
STEP, LR, BATCH_LOSS, ELAPSED_S = "step", "lr", "batch_loss", "elapsed_s"
SHARPNESS_PATH = "sharpness_path"  # which Hessian-vector product path ran (cached_double_backward, ...)
GN_SHARPNESS_RESID, GN_SHARPNESS_MATVECS = "gn_sharpness_resid", "gn_sharpness_matvecs"
BATCH_SHARPNESS_BATCHES = "batch_sharpness_batches"  # minibatches a batch_sharpness row averaged
BATCH_LAMBDA_MAX_MATVECS = "batch_lambda_max_matvecs"  # Hessian-vector products of a batch_lambda_max row
JACOBIAN_PASSES = "jacobian_passes"  # backward passes of the jacobian group
PROBE_N, PROBE_BN_MODE = "probe_n", "probe_bn_mode"  # the probe set a curvature row was measured on
MEASURE_SKIPPED = "measure_skipped"  # why a due measurement was not made (non-finite parameters)

EVAL_METRICS = (TRAIN_LOSS, TRAIN_ACC, TRAIN_CE, TEST_LOSS, TEST_ACC, TEST_CE, GEN_GAP_LOSS, GEN_GAP_ACC)

# group -> the metric names it produces (requestable names; bookkeeping keys such as sharpness_s come along)
GROUPS: Dict[str, tuple] = {
    "eval": EVAL_METRICS,
    "weights": (WEIGHT_NORM, DIST_INIT),
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
}
# by-products recorded whenever their metric is (SCIENCE.md: "Record sharpness_resid, sharpness_matvecs, ...")
COMPANIONS = {
    SHARPNESS: (SHARPNESS_K, SHARPNESS_RESID, SHARPNESS_MATVECS, SHARPNESS_COUNT),
    BATCH_SHARPNESS: (BATCH_SHARPNESS_SE,),
    BATCH_LAMBDA_MAX: (BATCH_LAMBDA_MAX_SE,),
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
}

"""
==========================================================
deepmc as the imputer of a cross-validated Pipeline
==========================================================

A table with holes is a partially observed matrix: rows are samples, columns are
features. Fitted on the training rows, a deepmc estimator completes rows it has never
seen by *folding them in*: each new row's coefficients on the fitted right factor are
fitted to its observed entries, with the factor fixed (see the user guide's section on
new rows). That is what lets it sit in a scikit-learn
:class:`~sklearn.pipeline.Pipeline` that is cross-validated over rows, like scikit-learn's
own imputers.

The data are scikit-learn's breast cancer table (569 samples, 30 correlated features),
standardised, with 30 % of the entries removed at random. Each imputer is the middle step
of ``StandardScaler → imputer → LogisticRegression``, cross-validated with 5 folds; for
each we report the error of the imputed entries of the test rows (relative to their true
standardised values), the classifier's accuracy, and the seconds of fitting and scoring.
"""

# %%
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from deepmc import CompressedDeepMatrixCompletion

# The documentation build sets DEEPMC_DOCS_QUICK=1 for a short run.
QUICK = os.environ.get("DEEPMC_DOCS_QUICK") == "1"
N_FOLDS = 3 if QUICK else 5

X, y = load_breast_cancer(return_X_y=True)
rng = np.random.default_rng(0)
X_missing = np.where(rng.random(X.shape) < 0.3, np.nan, X)
print(f"{X.shape[0]} rows x {X.shape[1]} columns, {np.isnan(X_missing).mean():.0%} missing")

# %%
# The imputers
# ------------
# The deepmc network has a rank bound of 10 (a third of the columns) and stops early on
# a validation slice of the observed entries, which keeps it from fitting the part of
# the table that is not low rank.
imputers = {
    "deepmc (compressed, rank 10)": CompressedDeepMatrixCompletion(
        rank=10, early_stopping=True, random_state=0
    ),
    "SimpleImputer (mean)": SimpleImputer(),
    "KNNImputer": KNNImputer(),
    "IterativeImputer": IterativeImputer(max_iter=10, random_state=0),
}

# %%
# Cross-validation
# ----------------
# ``cross_validate`` fits each pipeline on the training rows and scores the test rows;
# the fitted pipelines and the test indices it returns give the imputation error. Every
# imputer runs on one thread, so that the seconds compare like with like (and small
# matrix products do not pay for thread synchronisation).
cv = KFold(N_FOLDS, shuffle=True, random_state=0)
rows = []
for name, imputer in imputers.items():
    pipe = make_pipeline(StandardScaler(), imputer, LogisticRegression(max_iter=1000))
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = cross_validate(
            pipe, X_missing, y, cv=cv, return_estimator=True, return_indices=True
        )
    errors = []
    for fitted, test in zip(result["estimator"], result["indices"]["test"], strict=True):
        completed = fitted[:-1].transform(X_missing[test])
        truth = fitted[0].transform(X[test])
        missing = np.isnan(X_missing[test])
        errors.append(np.linalg.norm((completed - truth)[missing]) / np.linalg.norm(truth[missing]))
    rows.append(
        {
            "imputer": name,
            "imputation error": np.mean(errors),
            "accuracy": result["test_score"].mean(),
            "seconds": (result["fit_time"] + result["score_time"]).sum(),
        }
    )
table = pd.DataFrame(rows).set_index("imputer")
print(table.round(3).to_string())

# %%
# Error and seconds side by side
# ------------------------------
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
table["imputation error"].plot.barh(ax=axes[0], color="tab:blue")
axes[0].set_xlabel("relative error of the imputed entries (test rows)")
table["seconds"].plot.barh(ax=axes[1], color="tab:orange")
axes[1].set_xlabel(f"seconds ({N_FOLDS} folds, fit and score)")
axes[0].set_ylabel("")
fig.tight_layout()
plt.show()

# %%
# The mean imputer's error is 1 by construction (the standardised mean is 0). The
# low-rank completion uses the correlations between the features, as the iterative
# imputer does with one regression per feature; the table says what each costs.

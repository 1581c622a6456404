#!/usr/bin/env python
"""Is a dataset's test split like its validation split? A logistic model on 100 PCA components
of the pixels (in grey), trained on train: val and test AUC, and the mean pixel of each split.

    python docs/runs/split_shift.py $SSL_FT_DATA/brain_tumor_mri_sartaj_64.npz   # val 0.94, test 0.54
    python docs/runs/split_shift.py $SSL_FT_DATA/ham10000_dermoscopy_unique_lesion_64.npz
"""

import sys

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

z = np.load(sys.argv[1])
splits = ("train", "val", "test")
x = {}
for s in splits:
    images = z[f"{s}_images"].astype(np.float32) / 255
    images = images.mean(-1) if images.ndim == 4 else images  # RGB -> grey
    x[s] = images.reshape(len(images), -1)
y = {s: z[f"{s}_labels"].ravel() for s in splits}
pca = PCA(100, random_state=0).fit(x["train"])
clf = LogisticRegression(max_iter=3000, C=0.1).fit(pca.transform(x["train"]), y["train"])
for s in ("val", "test"):
    p = clf.predict_proba(pca.transform(x[s]))
    auc = roc_auc_score(y[s], p if p.shape[1] > 2 else p[:, 1], multi_class="ovr")
    print(f"{s}: AUC {auc:.3f}, ACC {(p.argmax(1) == y[s]).mean():.3f}")
print("mean pixel: " + ", ".join(f"{s} {x[s].mean():.3f}" for s in splits))

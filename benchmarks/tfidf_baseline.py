"""The strong classic baseline on exactly ragtune's splits: TF-IDF n-grams + a linear classifier.

    python benchmarks/tfidf_baseline.py configs/bbc3_scratch.yaml configs/thucnews_zh.yaml

The splits come from ``ragtune.tasks.classification.data.prepare_data`` on each config, so the baseline sees the
same train/validation/test rows as the ragtune run (carved splits included). Word 1-2-grams for
texts with spaces, character 1-3-grams for Chinese; ``LinearSVC`` with C picked on validation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.svm import LinearSVC

from ragtune.tasks import load_config
from ragtune.tasks.classification.data import prepare_data


def is_chinese(texts) -> bool:
    sample = "".join(texts[:200])
    return sum("\u4e00" <= ch <= "\u9fff" for ch in sample) > 0.3 * max(1, len(sample))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+")
    args = ap.parse_args()
    rows = []
    for path in args.configs:
        data = prepare_data(load_config(path))
        train, val, test = data.train, data.validation, data.test
        chinese = is_chinese(train.text.tolist())
        vec = (TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True) if chinese
               else TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2))
        started = time.perf_counter()
        x_train = vec.fit_transform(train.text)
        best = None
        for c in (0.1, 0.3, 1.0, 3.0):
            clf = LinearSVC(C=c).fit(x_train, train.label)
            acc = accuracy_score(val.label, clf.predict(vec.transform(val.text)))
            if best is None or acc > best[0]:
                best = (acc, c, clf)
        val_acc, c, clf = best
        pred = clf.predict(vec.transform(test.text))
        rows.append({
            "config": path, "features": "char 1-3-gram" if chinese else "word 1-2-gram", "C": c,
            "validation_accuracy": round(val_acc, 4), "test_accuracy": round(accuracy_score(test.label, pred), 4),
            "test_macro_f1": round(f1_score(test.label, pred, average="macro"), 4),
            "seconds": round(time.perf_counter() - started, 1), "n_test": len(test),
        })
    print("| config | features | C | validation acc | test acc | test macro-F1 | n test | seconds |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['features']} | {r['C']} | {r['validation_accuracy']} | {r['test_accuracy']} | "
              f"{r['test_macro_f1']} | {r['n_test']} | {r['seconds']} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

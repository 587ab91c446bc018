"""Self-contained reports of a search or a comparison: Markdown + PNG figures, no server needed.

``python -m sslray.report EXPERIMENT`` (see :mod:`sslray.report.__main__`):

    collect.py     a search's folder and MLflow records -> trials (every number from MLflow)
    importance.py  parameter importance from its Optuna study (final score and first ASHA rung)
    figures.py     learning curves, importance, collapse map, RankMe, a comparison's scores
    evaluate.py    the best trial against the untrained encoder (cached in report/eval.json)
    markdown.py    the search report: EXPERIMENT/report/report.md, logged to MLflow
    compare.py     the comparison report (a folder of ``python -m sslray.compare``)
"""

"""Child process: run a candidate pipeline on documents read as JSON from stdin, answer as JSON on stdout.

Started by evaluate.py as `python -I run_candidate.py PROGRAM` in an empty directory, so the candidate sees the
documents it is given and nothing else of the evaluation. Anything the candidate prints goes to stderr.
"""

import importlib.util
import json
import os
import sys
import traceback


def main() -> None:
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    docs = json.load(sys.stdin)
    stage = "import"
    try:
        spec = importlib.util.spec_from_file_location("candidate", sys.argv[1])
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load a Python module from {sys.argv[1]}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        outputs = {}
        for doc in docs:
            stage = f"clean_document on {doc['id']}"
            outputs[doc["id"]] = module.clean_document(doc["text"], dict(doc["meta"]))
        survivors = [{"id": d["id"], "text": outputs[d["id"]], "meta": dict(d["meta"])} for d in docs
                     if isinstance(outputs[d["id"]], str)]
        stage = "select_documents"
        selected = module.select_documents(survivors)
        stage = "encoding the results as JSON"
        payload = json.dumps({"ok": True, "outputs": outputs, "selected": list(selected)})
    except Exception as exc:  # the candidate's own failure, reported to the evaluator with its traceback
        error = f"{stage} raised {type(exc).__name__}: {exc}"
        payload = json.dumps({"ok": False, "error": error, "traceback": traceback.format_exc()})
    answer.write(payload)
    answer.flush()


if __name__ == "__main__":
    main()

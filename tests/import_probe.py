"""Imports the module named on the command line and prints, as JSON, the files of every rlhf_assets module now
loaded: what `tests/unit/test_code_versions.py` compares with a step's static closure. Run through the warm worker,
whose children hold none of this package's modules when they start."""

import importlib
import json
import sys

if __name__ == "__main__":
    importlib.import_module(sys.argv[1])
    print(json.dumps(sorted(module.__file__ for name, module in sys.modules.items()
                            if name.split(".")[0] == "rlhf_assets" and getattr(module, "__file__", None))))

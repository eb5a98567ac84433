"""``python -m hfkd ...`` and ``accelerate launch -m hfkd ...``: the ``hfkd`` command."""
from .cli import main

if __name__ == "__main__":
    main()

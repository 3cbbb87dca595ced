"""``python -m instag_hf.cli``: the ``instag`` command."""

from instag_hf.cli import main

if __name__ == "__main__":  # importing this module (as the layout test does) runs nothing
    main()

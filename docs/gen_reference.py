"""Regenerate the config reference of the docs (docs/reference/config.md) from the schema:
``python docs/gen_reference.py``. tests/test_config.py fails when it is out of date."""

from pathlib import Path

from ragtune.tasks import config_reference

PAGE = Path(__file__).resolve().parent / "reference" / "config.md"
START, END = "<!-- config-reference:start -->\n", "\n<!-- config-reference:end -->"


def main() -> None:
    text = PAGE.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    PAGE.write_text(head + START + config_reference().strip() + END + tail, encoding="utf-8")


if __name__ == "__main__":
    main()

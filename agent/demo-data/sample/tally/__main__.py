import sys

from .words import top_words


def main(paths):
    text = "\n".join(open(path, encoding="utf-8").read() for path in paths)
    for word, count in top_words(text):
        print(f"{count:6d}  {word}")


if __name__ == "__main__":
    main(sys.argv[1:])

import unittest

from tally import tokenize, top_words


class TokenizeTest(unittest.TestCase):
    def test_plain_words(self):
        self.assertEqual(tokenize("the cat sat"), ["the", "cat", "sat"])

    def test_case_and_punctuation(self):
        self.assertEqual(tokenize("Hello, hello! HELLO."), ["hello", "hello", "hello"])

    def test_line_breaks_separate_words(self):
        self.assertEqual(tokenize("one\ntwo\tthree"), ["one", "two", "three"])

    def test_apostrophes_stay_inside_words(self):
        self.assertEqual(tokenize("Don't panic"), ["don't", "panic"])


class TopWordsTest(unittest.TestCase):
    def test_most_common_first(self):
        text = "b a b\nc b a"
        self.assertEqual(top_words(text, 2), [("b", 3), ("a", 2)])


if __name__ == "__main__":
    unittest.main()

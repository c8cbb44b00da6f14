import unittest

from lists import last_n


class LastN(unittest.TestCase):
    def test_two(self):
        self.assertEqual(last_n([1, 2, 3, 4], 2), [3, 4])

    def test_more_than_there_are(self):
        self.assertEqual(last_n([1, 2], 5), [1, 2])

    def test_zero(self):
        self.assertEqual(last_n([1, 2], 0), [])


if __name__ == "__main__":
    unittest.main()

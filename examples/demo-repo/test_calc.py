import unittest

import calc


class CalcTest(unittest.TestCase):
    def test_mean(self):
        self.assertEqual(calc.mean([1, 2, 3, 4]), 2.5)

    def test_mean_empty(self):
        with self.assertRaises(ValueError):
            calc.mean([])

    def test_median_odd(self):
        self.assertEqual(calc.median([3, 1, 2]), 2)

    def test_median_even(self):
        self.assertEqual(calc.median([4, 1, 3, 2]), 2.5)

    def test_clamp(self):
        self.assertEqual(calc.clamp(5, 0, 3), 3)
        self.assertEqual(calc.clamp(-1, 0, 3), 0)


if __name__ == "__main__":
    unittest.main()

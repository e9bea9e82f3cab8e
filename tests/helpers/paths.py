"""Paths of the checkout for the test modules, whatever their depth under tests/ (the test folders mirror the
package's, so ``os.path.dirname(__file__)`` no longer names tests/ in every module)."""

import os

HELPERS = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HELPERS)
REPO = os.path.dirname(TESTS)

import sys


def main(argv=None):
    print("poncho_package_cache: not implemented yet", file=sys.stderr)
    return 1

import sys


def main(argv=None):
    print("poncho_package_analyze: not implemented yet", file=sys.stderr)
    return 1

import sys


def main(argv=None):
    print("poncho_package_create: not implemented yet", file=sys.stderr)
    return 1

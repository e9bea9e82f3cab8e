"""Environment builds: spec -> populated prefix -> packed, relocatable tarball (cached by content).

(Being written: see issue 4.)
"""

"""Thin command-line front ends: each module parses arguments, calls the library, and maps errors to exit codes."""

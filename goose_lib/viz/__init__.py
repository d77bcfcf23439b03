"""goose_lib.viz"""

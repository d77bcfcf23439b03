"""goose_lib.infer"""

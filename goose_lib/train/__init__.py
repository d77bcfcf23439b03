"""goose_lib.train"""

"""goose_lib.teacher"""

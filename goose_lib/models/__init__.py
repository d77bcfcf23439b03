"""goose_lib.models"""

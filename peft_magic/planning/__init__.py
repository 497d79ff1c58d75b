"""(restructure in progress)"""

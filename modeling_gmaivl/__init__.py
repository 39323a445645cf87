"""modeling_gmaivl"""

"""dataset_builders"""

"""model_cards"""

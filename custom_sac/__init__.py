from custom_sac.policies import CustomSACPolicy, MlpPolicy, MultiInputPolicy
from custom_sac.sac import CustomSAC

__all__ = ["CustomSAC", "CustomSACPolicy", "MlpPolicy", "MultiInputPolicy"]

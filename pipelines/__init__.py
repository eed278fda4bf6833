"""The fakeface Kubeflow pipelines: training (:mod:`fakeface.pipelines.training`) and ablation
(:mod:`fakeface.pipelines.ablation`), their typed parameters (:mod:`fakeface.pipelines.typed`)
and cluster settings (:mod:`fakeface.pipelines.settings`). Nothing is imported here: importing
kfp's compiler side is left to whoever builds a pipeline.
"""

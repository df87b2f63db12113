/*
 * vcc: Virtual Cell Challenge 2025 student project (docs/studies/vcc.md).
 * prepare -> reference (DE of the real test cells, once) -> [STATE train, scGPT fine-tune] -> predict +
 * evaluate per model -> summarise.
 * Every script is one call of bin/vcc.py; settings come from conf/modules/vcc.config (ext.args).
 */

process VCC_FIXTURE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    val(meta)

    output:
    tuple val(meta), path('fixture/vcc_fixture.h5ad'), path('fixture/ESM2_pert_features.pt'), path('fixture/test_genes.txt'), emit: data
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py fixture --outdir fixture ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p fixture
    touch fixture/vcc_fixture.h5ad fixture/ESM2_pert_features.pt fixture/test_genes.txt
    """
}

process VCC_PREPARE {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(counts), path(test_genes)

    output:
    tuple val(meta), path('prepared'), emit: prepared
    tuple val("${task.process}"), val('scanpy'), eval('python -c "import scanpy; print(scanpy.__version__)"'), topic: versions, emit: versions_scanpy
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py prepare --input ${counts} --test-genes ${test_genes} --outdir prepared ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p prepared
    touch prepared/prepared.h5ad prepared/group_means.h5ad prepared/split.json prepared/split.tsv
    """
}

process VCC_REFERENCE {
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(prepared)

    output:
    tuple val(meta), path('reference'), emit: reference
    tuple val("${task.process}"), val('cell-eval'), eval('python -c "from importlib.metadata import version; print(version(\'cell-eval\'))"'), topic: versions, emit: versions_cell_eval
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py reference --prepared ${prepared} --outdir reference --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p reference
    touch reference/real_stats.npz reference/real_pdex.parquet reference/reference.json
    """
}

process VCC_PREDICT {
    tag "${meta.id}:${model}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(prepared), val(model), path(features)

    output:
    tuple val(meta), val(model), path("predictions/${model}_pred.h5ad"), path("predictions/${model}_model.json"), emit: predictions
    tuple val("${task.process}"), val('scikit-learn'), eval('python -c "import sklearn; print(sklearn.__version__)"'), topic: versions, emit: versions_sklearn
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    // Without an embeddings file `features` is an empty list: `--features ''` selects the fallback features.
    // (STATE and scGPT have their own GPU processes below.)
    """
    vcc.py predict --prepared ${prepared} --model ${model} --features '${features ?: ''}' --outdir predictions --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p predictions
    touch predictions/${model}_pred.h5ad predictions/${model}_model.json
    """
}

process VCC_STATE_TRAIN {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(prepared), path(features)

    output:
    tuple val(meta), path('state_model'), emit: model
    tuple val("${task.process}"), val('arc-state'), eval('python -c "from importlib.metadata import version; print(version(\'arc-state\'))"'), topic: versions, emit: versions_state
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    // One arc-state run gives both STATE rows: state_more_steps.ckpt on the way, state.ckpt at the end.
    """
    vcc.py state-train --prepared ${prepared} --features '${features ?: ''}' --outdir state_model --device auto --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p state_model
    touch state_model/state.ckpt state_model/state_more_steps.ckpt state_model/train_info.json state_model/pert_onehot_map.pt
    """
}

process VCC_SCGPT_FINETUNE {
    tag "${meta.id}"
    label 'process_high'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(prepared), path(checkpoint)

    output:
    tuple val(meta), path('scgpt_model'), emit: model
    tuple val("${task.process}"), val('scgpt'), eval('python -c "from importlib.metadata import version; print(version(\'scgpt\'))"'), topic: versions, emit: versions_scgpt
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    // Without a checkpoint `checkpoint` is [] and ext.args carries --scgpt-allow-random-init when allowed.
    """
    vcc.py scgpt-finetune --prepared ${prepared} --scgpt-checkpoint '${checkpoint ?: ''}' --outdir scgpt_model --device auto --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p scgpt_model/checkpoint
    touch scgpt_model/train_info.json scgpt_model/genes.json scgpt_model/checkpoint/best_model.pt
    """
}

process VCC_PREDICT_TRAINED {
    tag "${meta.id}:${model}"
    label 'process_medium'
    label 'process_gpu'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(prepared), val(model), path(trained), path(checkpoint)

    output:
    tuple val(meta), val(model), path("predictions/${model}_pred.h5ad"), path("predictions/${model}_model.json"), emit: predictions
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    // STATE and scGPT rows: `trained` is a state-train / scgpt-finetune folder ([] for zero-shot scGPT).
    """
    vcc.py predict --prepared ${prepared} --model ${model} --trained '${trained ?: ''}' --scgpt-checkpoint '${checkpoint ?: ''}' --outdir predictions --device auto --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p predictions
    touch predictions/${model}_pred.h5ad predictions/${model}_model.json
    """
}

process VCC_EVALUATE {
    tag "${meta.id}:${model}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), val(model), path(predictions), path(model_info), path(prepared), path(reference)

    output:
    tuple val(meta), path("evaluations/${model}_*"), emit: evaluation
    tuple val("${task.process}"), val('cell-eval'), eval('python -c "from importlib.metadata import version; print(version(\'cell-eval\'))"'), topic: versions, emit: versions_cell_eval
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py evaluate --prepared ${prepared} --reference ${reference} --predictions ${predictions} --model ${model} --outdir evaluations --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p evaluations
    touch evaluations/${model}_eval.json evaluations/${model}_per_perturbation.tsv evaluations/${model}_cell_eval_agg.csv
    """
}

process VCC_SUMMARISE {
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(evaluations, stageAs: 'evaluations/*')
    val(models)
    val(data_source)

    output:
    path('vcc/metrics.tsv'), emit: metrics
    path('vcc/run_info.json'), emit: run_info
    path('vcc/vcc_*.png'), emit: figures
    path('vcc/vcc_metrics_mqc.tsv'), emit: mqc
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py summarise --evaluations evaluations --models ${models} --data-source ${data_source} --outdir vcc ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p vcc
    touch vcc/metrics.tsv vcc/run_info.json vcc/vcc_metrics_vs_published.png vcc/vcc_pds_rank_heatmap.png vcc/vcc_metrics_mqc.tsv
    """
}

workflow VCC {
    take:
    ch_data           // [meta, counts h5ad, ESM2 .pt or [], test genes file]
    models            // list of model names
    data_source       // 'fixture' or 'provided'
    scgpt_checkpoint  // pretrained scGPT folder or []
    scgpt_runnable    // true when a checkpoint is given or random initialisation is allowed

    main:
    def state_models = models.findAll { m -> m in ['state', 'state_more_steps'] }
    def scgpt_models = scgpt_runnable ? models.findAll { m -> m in ['scgpt_zero_shot', 'scgpt_finetuned'] } : []
    def baseline_models = models.findAll { m -> !(m in ['state', 'state_more_steps', 'scgpt_zero_shot', 'scgpt_finetuned']) }

    VCC_PREPARE(ch_data.map { meta, counts, features, test_genes -> [meta, counts, test_genes] })
    VCC_REFERENCE(VCC_PREPARE.out.prepared)
    ch_features = ch_data.map { meta, counts, features, test_genes -> [meta, features] }

    ch_predict = VCC_PREPARE.out.prepared
        .join(ch_features)
        .combine(channel.fromList(baseline_models))
        .map { meta, prepared, features, model -> [meta, prepared, model, features] }
    VCC_PREDICT(ch_predict)

    // [meta, model, trained folder or []] for the models with their own training step
    ch_trained = channel.empty()
    if (state_models) {
        VCC_STATE_TRAIN(VCC_PREPARE.out.prepared.join(ch_features))
        ch_trained = ch_trained.mix(
            VCC_STATE_TRAIN.out.model.combine(channel.fromList(state_models)).map { meta, dir, model -> [meta, model, dir] }
        )
    }
    if ('scgpt_finetuned' in scgpt_models) {
        VCC_SCGPT_FINETUNE(VCC_PREPARE.out.prepared.map { meta, prepared -> [meta, prepared, scgpt_checkpoint] })
        ch_trained = ch_trained.mix(VCC_SCGPT_FINETUNE.out.model.map { meta, dir -> [meta, 'scgpt_finetuned', dir] })
    }
    if ('scgpt_zero_shot' in scgpt_models) {
        ch_trained = ch_trained.mix(VCC_PREPARE.out.prepared.map { meta, prepared -> [meta, 'scgpt_zero_shot', []] })
    }
    VCC_PREDICT_TRAINED(
        VCC_PREPARE.out.prepared
            .combine(ch_trained, by: 0)
            .map { meta, prepared, model, trained -> [meta, prepared, model, trained, scgpt_checkpoint] }
    )

    ch_evaluate = VCC_PREDICT.out.predictions
        .mix(VCC_PREDICT_TRAINED.out.predictions)
        .combine(VCC_PREPARE.out.prepared.join(VCC_REFERENCE.out.reference), by: 0)
    VCC_EVALUATE(ch_evaluate)

    ch_evaluations = VCC_EVALUATE.out.evaluation
        .groupTuple()
        .map { meta, files -> [meta, files.flatten()] }
    // scGPT rows that cannot run are reported by summarise as `not computed` with the reason
    VCC_SUMMARISE(ch_evaluations, models.join(','), data_source)

    emit:
    metrics  = VCC_SUMMARISE.out.metrics
    run_info = VCC_SUMMARISE.out.run_info
    figures  = VCC_SUMMARISE.out.figures
}

/*
 * Added processes (kept at the end of the file): the STATE support set and score mode.
 */

process VCC_SUPPORT_SET {
    // competition_support_set.zip: its sha256 (assets/data_manifest.tsv) is checked, then
    // ESM2_pert_features.pt is taken out of it as the features file (STATE, *_features models).
    tag "${meta.id}"
    label 'process_low'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(support_zip)

    output:
    tuple val(meta), path('support_set/ESM2_pert_features.pt'), emit: features
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    """
    vcc.py support-set --zip ${support_zip} --outdir support_set ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p support_set
    touch support_set/ESM2_pert_features.pt
    """
}

process VCC_SCORE {
    // Score mode: a reviewer's own predictions against real cells, both evaluators, no prepare.
    tag "${meta.id}"
    label 'process_medium'
    container 'ghcr.io/txrepro/txrepro-vcc:0.1.0'

    input:
    tuple val(meta), path(real, stageAs: 'real/*'), path(pred, stageAs: 'pred/*'), path(baseline, stageAs: 'baseline/*')

    output:
    tuple val(meta), path('score/*'), emit: score
    tuple val("${task.process}"), val('cell-eval'), eval('python -c "from importlib.metadata import version; print(version(\'cell-eval\'))"'), topic: versions, emit: versions_cell_eval
    tuple val("${task.process}"), val('txrepro'), eval('python -c "import txrepro; print(txrepro.__version__)"'), topic: versions, emit: versions

    script:
    // Without a baseline file `baseline` is [] and the overall scores are `not computed`.
    """
    vcc.py score --real ${real} --pred ${pred} --baseline '${baseline ?: ''}' --outdir score --threads ${task.cpus} ${task.ext.args ?: ''}
    """

    stub:
    """
    mkdir -p score
    touch score/metrics.tsv score/score.json
    """
}

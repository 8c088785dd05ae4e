import time, json
def test_probe(stack, api):
    print(stack.timings)
    t0 = time.time()
    run = api.trigger("argus_weather_training", {"conditions": ["fog"], "train_steps": 20, "data_window": "all", "min_frames_per_group": 4})
    rid = run["dag_run_id"]
    last = None
    while True:
        runs = api.runs("argus_weather_training")
        st = {r["dag_run_id"][:20]: (r["state"], api.states("argus_weather_training", r["dag_run_id"])) for r in runs}
        if st != last:
            print(round(time.time()-t0), st); last = st
        if all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(3)
    print("all done", time.time() - t0)
    for x in api.runs("argus_weather_training"):
        print(x["dag_run_id"], x["state"], x["logical_date"], x["data_interval_start"], x["start_date"], x["end_date"])
        for ti in api.task_instances("argus_weather_training", x["dag_run_id"]):
            print("   ", ti["task_id"], ti["map_index"], ti["state"], ti["try_number"], ti["duration"])

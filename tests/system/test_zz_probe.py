import time
def test_probe(stack, api):
    print(stack.timings)
    print(api.dag("argus_weather_training")["is_paused"])
    time.sleep(5)
    print(api.runs("argus_weather_training"))

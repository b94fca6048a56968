# CPU image: the same pins as requirements.txt; runs the main job on the embedded default data.
FROM python:3.11-slim
WORKDIR /adaptune
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV TF_CPP_MIN_LOG_LEVEL=1
CMD ["python", "-m", "app.train"]
